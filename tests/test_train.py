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


class _Killed(Exception):
    pass


def _dropout_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout2d(0.3),
                               torch.nn.Conv2d(8, 1, 1))


def test_interrupted_epoch_resumes_exactly(tmp_path):
    """Killed during epoch 3 (after epoch 2's checkpoint), then resumed: the same weights and losses as an
    uninterrupted run, bit for bit: the shuffle order, dropout masks and optimizer state all continue."""
    from compressor.data import ArrayDataset, make_loader

    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, 8, 8, generator=g)
    ds = ArrayDataset(x, (x[:, :1] > 0.3).float())
    task, opts = TaskSpec("segmentation", 1), TrainOptions(epochs=4, batch_size=8, lr=1e-2)

    def run(checkpoint, kill_at=None):
        torch.manual_seed(123)  # what a pass's seed_everything does before fit
        m = _dropout_model()
        calls = {"n": 0}

        def loss_fn(logits, target, _x):
            calls["n"] += 1
            if kill_at is not None and calls["n"] == kill_at:
                raise _Killed
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)

        r = fit(m, make_loader(ds, 8, shuffle=True, seed=7), task, opts, loss_fn=loss_fn, checkpoint=checkpoint,
                progress=False)
        return m, r

    ref, ref_r = run(None)
    ck = tmp_path / "ck.pt"
    try:
        run(ck, kill_at=2 * 5 + 3)  # 5 steps per epoch: the 3rd step of epoch 3
    except _Killed:
        pass
    assert torch.load(ck, weights_only=True)["epoch"] == 2
    resumed, r = run(ck)
    assert r.resumed_from == 2 and r.losses == ref_r.losses
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), ref.state_dict().values()))


def test_depthwise_5x5_models_train_in_channels_last_and_come_back_in_the_default_layout():
    import copy

    from compressor.train import channels_last_pays

    def net(k: int) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.Conv2d(8, 8, k, padding=k // 2, groups=8),
                                   torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(8, 3))

    assert channels_last_pays(net(5), "cpu") and channels_last_pays(net(7), "cpu")
    assert not channels_last_pays(net(3), "cpu") and not channels_last_pays(net(5), "cuda")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 2, 12, 12, generator=g), torch.randint(0, 3, (16,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    opts = TrainOptions(epochs=2, lr=1e-2)
    model = net(5)
    reference = copy.deepcopy(model)
    fit(model, loader, TaskSpec("classification", 3), opts, progress=False)
    assert all(p.is_contiguous() for p in model.parameters())
    # the same steps in NCHW give the same weights (to float rounding): only the layout differed
    from compressor.train import _fit

    _fit(reference, loader, TaskSpec("classification", 3), opts, progress=False)
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
