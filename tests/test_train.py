import torch
from torch.utils.data import DataLoader, TensorDataset

from compressor.ir import TaskSpec
from compressor.train import TrainOptions, fit, segmentation_loss


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, 8, 8, generator=g)
    y = (x[:, :1] > 0.5).float()
    return DataLoader(TensorDataset(x, y), batch_size=8)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))


def test_loss_decreases():
    r = fit(model(), loader(), TaskSpec("segmentation", 1), TrainOptions(epochs=5, lr=1e-2), progress=False)
    assert r.losses[-1] < r.losses[0]


def test_checkpoint_resume(tmp_path):
    ck = tmp_path / "ck.pt"
    m = model()
    first = fit(m, loader(), TaskSpec("segmentation", 1), TrainOptions(epochs=2), checkpoint=ck, progress=False)
    assert first.epochs_run == 2 and ck.is_file()
    m2 = model()
    again = fit(m2, loader(), TaskSpec("segmentation", 1), TrainOptions(epochs=3), checkpoint=ck, progress=False)
    assert again.resumed_from == 2 and again.epochs_run == 1 and len(again.losses) == 3
    assert again.losses[:2] == first.losses


def test_segmentation_loss_hand_value():
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    # BCE of p=0.5 is ln 2; soft Dice = 1 - (2*0.5 + 1) / (1 + 1 + 1) = 1/3
    expected = torch.log(torch.tensor(2.0)) + 1 / 3
    assert torch.isclose(segmentation_loss(logits, target), expected)
