"""Sentence data: Kim's tokenisation, vocabulary and padding, the file formats, the named sets and their downloads."""
import io
import tarfile

import numpy as np
import pytest
import torch

from cnnlab.data import download as download_module
from cnnlab.data import text as T
from cnnlab.data.text import (PAD, UNK, TextSet, build_vocabulary, clean_str, clean_str_sst, encode, fold_indices,
                              from_texts, load_text, tokenize)
from cnnlab.errors import CnnlabError
from conftest import md5_of, write_text_sets


def test_clean_str_splits_clitics_and_punctuation_as_kim_did():
    assert clean_str("It's a MUST-see (really)! Isn't it?") == "it 's a must see ( really ) ! is n't it ?"
    assert clean_str("They'll've gone, we'd say.") == "they 'll 've gone , we 'd say"
    assert clean_str("What is CNN's <b>name</b>?", lower=False) == "What is CNN 's b name b ?"
    assert clean_str_sst("a so-so , ok film : é") == "a so so , ok film"
    assert tokenize("Don't stop!", "kim") == ["do", "n't", "stop", "!"]
    with pytest.raises(CnnlabError, match="unknown tokenizer 'nope'.*kim"):
        tokenize("x", "nope")


def test_vocabulary_is_frequency_ordered_after_pad_and_unk_and_encoding_pads_right():
    sents = [["b", "a", "b"], ["c", "b"], []]
    vocab = build_vocabulary(sents)
    assert vocab == (PAD, UNK, "b", "a", "c")
    ids, lengths = encode(sents + [["zzz", "a"]], vocab)
    assert ids.dtype == torch.int64 and ids.tolist() == [[2, 3, 2], [4, 2, 0], [0, 0, 0], [1, 3, 0]]
    assert lengths.tolist() == [3, 2, 0, 2]
    assert encode(sents, vocab, length=2)[0].tolist() == [[2, 3], [4, 2], [0, 0]]


def test_textset_splits_keep_classes_and_re_encode_with_a_training_vocabulary():
    data = from_texts([f"w{i} common" for i in range(20)], ["pos" if i % 2 else "neg" for i in range(20)], "toy")
    assert data.classes == ["neg", "pos"] and data.tokens.shape == (20, 2) and data.inputs is data.tokens
    rest, held = data.split(0.25, seed=1)
    assert len(held) == 5 and len(rest) == 15 and set(held.labels.tolist()) == {0, 1}
    train = rest.with_vocabulary()
    val = held.with_vocabulary(train.vocabulary)
    assert val.tokens[:, 0].eq(1).all() and val.tokens[:, 1].ne(1).all()  # held-out words are unknown, "common" known
    assert val.decode(0) == [UNK, "common"]
    with pytest.raises(CnnlabError, match="label.*'maybe'.*not among the classes neg, pos"):
        from_texts(["x"], ["maybe"], "toy", classes=["neg", "pos"])
    with pytest.raises(CnnlabError, match="labels must lie in 0..1"):
        TextSet([["x"]], torch.tensor([2]), ["a", "b"], "bad")


def test_folds_are_stratified_disjoint_and_cover_everything():
    labels = np.array([0] * 23 + [1] * 17)
    folds = [fold_indices(labels, 10, k) for k in range(1, 11)]
    assert sorted(np.concatenate(folds).tolist()) == list(range(40))
    assert all(abs(len(f) - 4) <= 1 and 1 <= labels[f].sum() <= 2 for f in folds)
    assert np.array_equal(fold_indices(labels, 10, 3, seed=0), folds[2])
    with pytest.raises(CnnlabError, match="--fold must be between 1 and --folds 10"):
        fold_indices(labels, 10, 11)


def test_named_sets_read_their_official_files(text_root):
    mr = load_text("mr", root=text_root, download=False)
    assert mr.classes == ["negative", "positive"] and len(mr) == 240 and mr.tokenizer == "kim"
    assert mr.sentences[-1][-1] == "caf" and "." not in mr.sentences[0]  # é and . are not kept characters
    sst = load_text("SST-2", "dev", root=text_root, download=False)
    assert len(sst) == 120 and sst.tokenizer == "sst" and sorted(set(sst.labels.tolist())) == [0, 1]
    trec = load_text("trec", root=text_root, download=False)
    assert trec.classes == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"] and trec.sentences[0][0] == "Who"
    with pytest.raises(CnnlabError, match="mr has no 'test' split.*--fold K"):
        load_text("mr", "test", root=text_root)
    with pytest.raises(CnnlabError, match=r"sst2's test split is read from .*stsa\.binary\.test.*not downloaded"):
        load_text("sst2", "test", root=text_root)


def test_labelled_files_tsv_csv_and_text_folders(tmp_path):
    (tmp_path / "lines.txt").write_text("pos a fine film\n\nneg a dull one\n")
    assert load_text(str(tmp_path / "lines.txt")).classes == ["neg", "pos"]
    (tmp_path / "t.tsv").write_text("sentence\tlabel\nvery good\tyes\nbad\tno\n")
    data = load_text(str(tmp_path / "t.tsv"))
    assert data.sentences == [["very", "good"], ["bad"]] and data.classes == ["no", "yes"]
    (tmp_path / "c.csv").write_text('label,text\n1,"great, really"\n0,awful\n')
    assert load_text(str(tmp_path / "c.csv")).sentences[0] == ["great", ",", "really"]
    for label, texts in (("ham", ["see you at noon", "thanks"]), ("spam", ["win money now"])):
        (tmp_path / "mail" / label).mkdir(parents=True)
        for i, t in enumerate(texts):
            (tmp_path / "mail" / label / f"{i}.txt").write_text(t)
    mail = load_text(str(tmp_path / "mail"))
    assert mail.classes == ["ham", "spam"] and mail.labels.tolist() == [0, 0, 1]
    (tmp_path / "bad.csv").write_text("label,other\n1,x\n")
    with pytest.raises(CnnlabError, match="names a label column but no text column"):
        load_text(str(tmp_path / "bad.csv"))
    (tmp_path / "short.txt").write_text("pos\n")
    with pytest.raises(CnnlabError, match="line 1: expected 'LABEL sentence'"):
        load_text(str(tmp_path / "short.txt"))
    with pytest.raises(CnnlabError, match="has no 'test' split"):
        load_text(str(tmp_path / "t.tsv"), "test")
    with pytest.raises(CnnlabError, match="unknown text dataset 'nothing'.*mr, sst2, trec"):
        load_text("nothing")


def serve(monkeypatch, spec_name: str, server, files: dict[str, bytes]) -> None:
    """Point a named set's remote files at the local server, with the served bytes' checksums."""
    spec = T.NAMED[spec_name]
    remote = {}
    for name, payload in files.items():
        (server.root / name).write_bytes(payload)
        remote[name] = T.Remote(server.url(name), md5_of(server.root / name), len(payload))
    monkeypatch.setitem(T.NAMED, spec_name, T.NamedText(**{**spec.__dict__, "remote": remote}))


def test_named_sets_download_their_files_checked_and_cached(http_server, tmp_path, monkeypatch):
    write_text_sets(tmp_path / "made", n=8)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(tmp_path / "made" / "rt-polaritydata", arcname="rt-polaritydata")
    serve(monkeypatch, "mr", http_server, {"rt-polaritydata.tar.gz": buf.getvalue()})
    serve(monkeypatch, "trec", http_server, {"train_5500.label": (tmp_path / "made/trec/train_5500.label").read_bytes(),
                                             "TREC_10.label": b"HUM:ind Who is he ?\nLOC:city Where is it ?\n"})
    root = tmp_path / "cache"
    assert len(load_text("mr", root=root)) == 16
    assert len(load_text("trec", "test", root=root)) == 2
    hits = list(http_server.hits)
    assert len(load_text("mr", root=root)) == 16 and http_server.hits == hits  # cached: nothing fetched again
    assert (root / "rt-polaritydata" / "rt-polarity.pos").is_file()


def test_named_set_offline_is_one_line_naming_the_file(closed_port_url, tmp_path, monkeypatch):
    spec = T.NAMED["trec"]
    remote = {n: T.Remote(closed_port_url, r.checksum, r.size) for n, r in spec.remote.items()}
    monkeypatch.setitem(T.NAMED, "trec", T.NamedText(**{**spec.__dict__, "remote": remote}))
    monkeypatch.setattr(download_module, "TIMEOUT", 2.0)
    with pytest.raises(CnnlabError, match=r"cannot download .*: download it manually and place it at .*train_5500"):
        load_text("trec", root=tmp_path)
    with pytest.raises(CnnlabError, match="is missing: pass a --data-dir that holds trec/"):
        load_text("trec", root=tmp_path, download=False)


def test_sha256_checksums_verify_a_download(http_server, tmp_path):
    import hashlib

    payload = b"x" * 100
    (http_server.root / "f.bin").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    assert download_module.fetch(http_server.url("f.bin"), good, tmp_path, size=100).read_bytes() == payload
    with pytest.raises(CnnlabError, match="has sha256 .* expected"):
        download_module.fetch(http_server.url("f.bin"), "0" * 64, tmp_path / "other", size=100)
