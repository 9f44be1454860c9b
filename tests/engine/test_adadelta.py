"""The row-lazy Adadelta gives torch.optim.Adadelta's weights, and resumes from its state dict exactly."""
import torch
import torch.nn.functional as F

from cnnlab.engine.optim import Adadelta


def steps(opt, table, bias, batches):
    for rows in batches:
        opt.zero_grad()
        (F.embedding(rows, table).pow(2).sum() + (bias * rows.float().mean()).sum()).backward()
        opt.step()


def test_lazy_rows_match_the_dense_update_and_resume():
    torch.manual_seed(0)
    init = torch.randn(200, 6), torch.randn(6)
    batches = [torch.randint(0, 200, (12,)) for _ in range(25)]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    ref = [torch.nn.Parameter(t.clone()) for t in init]
    steps(Adadelta(ours, lr=1.0, rho=0.95, eps=1e-6), *ours, batches)
    steps(torch.optim.Adadelta(ref, lr=1.0, rho=0.95, eps=1e-6), *ref, batches)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, ref))
    halves = [torch.nn.Parameter(t.clone()) for t in init]
    first = Adadelta(halves, lr=1.0, rho=0.95, eps=1e-6)
    steps(first, *halves, batches[:10])
    second = Adadelta(halves, lr=1.0, rho=0.95, eps=1e-6)
    second.load_state_dict(first.state_dict())
    steps(second, *halves, batches[10:])
    assert all(torch.equal(a, b) for a, b in zip(halves, ours))
