"""Pretrained word vectors: word2vec binary and text/GloVe files, only the vocabulary's words kept."""
import pytest
import torch

from cnnlab.data.vectors import read_word_vectors
from cnnlab.errors import CnnlabError
from conftest import write_word2vec_binary

WORDS = {"good": [1.0, 2.0, 3.0], "bad": [-1.0, 0.5, 0.0], "other": [9.0, 9.0, 9.0]}
VOCAB = ("<pad>", "<unk>", "bad", "good", "absent")


def test_binary_and_text_files_give_the_same_vectors(tmp_path):
    binary = read_word_vectors(write_word2vec_binary(tmp_path / "v.bin", WORDS), VOCAB)
    (tmp_path / "glove.txt").write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in WORDS.items()))
    glove = read_word_vectors(tmp_path / "glove.txt", VOCAB)
    (tmp_path / "w2v.txt").write_text("3 3\n" + (tmp_path / "glove.txt").read_text())
    text_with_header = read_word_vectors(tmp_path / "w2v.txt", VOCAB)
    for vectors in (binary, glove, text_with_header):
        assert vectors.found.tolist() == [False, False, True, True, False]
        assert torch.equal(vectors.vectors[3], torch.tensor(WORDS["good"])) and vectors.vectors[4].eq(0).all()
        assert vectors.dim == 3 and "2 of 5 words" in vectors.describe()


def test_missing_truncated_and_malformed_files_are_one_line(tmp_path):
    with pytest.raises(CnnlabError, match="absent.bin is missing: pass --word-vectors"):
        read_word_vectors(tmp_path / "absent.bin", VOCAB)
    full = write_word2vec_binary(tmp_path / "v.bin", WORDS).read_bytes()
    (tmp_path / "cut.bin").write_bytes(full[:-7])
    with pytest.raises(CnnlabError, match="truncated"):
        read_word_vectors(tmp_path / "cut.bin", VOCAB)
    (tmp_path / "nohead.bin").write_bytes(full.split(b"\n", 1)[1])
    with pytest.raises(CnnlabError, match="no 'COUNT DIM' header"):
        read_word_vectors(tmp_path / "nohead.bin", VOCAB)
    (tmp_path / "ragged.txt").write_text("good 1 2 3\nbad 1 2\n")
    with pytest.raises(CnnlabError, match="line 2: 2 numbers where the file has 3"):
        read_word_vectors(tmp_path / "ragged.txt", VOCAB)
