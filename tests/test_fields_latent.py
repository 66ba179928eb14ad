"""CodeMLP, LatentField and NeRFField: conditioning on the simplex code u."""

from __future__ import annotations

import pytest
import torch

from a3d_mesh.fields import CodeMLP, HashGridConfig, LatentField, NeRFField, trunc_exp, world_to_unit

SMALL = HashGridConfig(
    n_levels=6, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=1.6
)


def test_code_mlp_is_concatenation_and_broadcasts() -> None:
    torch.manual_seed(0)
    mlp = CodeMLP(in_features=12, n_codes=3, out_features=4, hidden=16, n_hidden_layers=2)
    feat = torch.randn(50, 12)
    u = torch.tensor([0.2, 0.5, 0.3])
    explicit = mlp.rest(mlp.first(torch.cat([feat, u.expand(50, 3)], dim=1)))
    torch.testing.assert_close(mlp(feat, u), explicit)
    torch.testing.assert_close(mlp(feat, u.expand(50, 3).clone()), explicit)
    assert CodeMLP(12, 3, 4, n_hidden_layers=0)(feat, u).shape == (50, 4)
    with pytest.raises(ValueError):
        mlp(feat, torch.ones(2))
    with pytest.raises(ValueError):
        mlp(feat, torch.ones(49, 3))


def test_world_to_unit_maps_and_clamps() -> None:
    x = torch.tensor([[-2.0, 0.0, 2.0], [-1.0, 1.0, 0.5]])
    expected = torch.tensor([[0.0, 0.5, 1.0], [0.0, 1.0, 0.75]])
    torch.testing.assert_close(world_to_unit(x, 1.0), expected)
    torch.testing.assert_close(world_to_unit(x * 3, 3.0), expected)


def test_latent_field_conditioning_and_per_point_codes() -> None:
    field = LatentField(2, SMALL, {"sdf": 1, "offset": 3}, hidden=32, backend="torch", seed=0)
    with torch.no_grad():
        field.encoding.params.uniform_(-0.5, 0.5)
    x = torch.rand(64, 3) * 2 - 1
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out0, out1 = field(x, e0), field(x, e1)
    assert out0["sdf"].shape == (64, 1) and out0["offset"].shape == (64, 3)
    assert (out0["sdf"] - out1["sdf"]).abs().max() > 1e-3
    # Hybrid: a code per point gives, row by row, the field of that row's object.
    owner = torch.arange(64) % 2
    u_per_point = torch.stack([e0, e1])[owner]
    mixed = field(x, u_per_point)
    for name in ("sdf", "offset"):
        expected = torch.where(owner[:, None] == 0, out0[name], out1[name])
        torch.testing.assert_close(mixed[name], expected)
    assert list(field.decode(field.encode(x), e0, names=("offset",))) == ["offset"]
    with pytest.raises(KeyError):
        field(x, e0, names=("albedo",))


def test_corners_reproduce_what_training_at_each_corner_produced() -> None:
    """Train at e_0 on one target and at e_1 on another: each corner recalls its own target."""
    torch.manual_seed(1)
    field = LatentField(2, SMALL, {"value": 1}, hidden=32, backend="torch", seed=1)
    x = torch.rand(1024, 3) * 2 - 1
    targets = [torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:2]), x.norm(dim=1, keepdim=True) - 0.6]
    codes = torch.eye(2)
    opt = torch.optim.Adam(
        [{"params": field.encoding.parameters(), "lr": 1e-2}, {"params": field.heads.parameters(), "lr": 3e-3}]
    )
    for step in range(240):
        k = step % 2
        loss = (field(x, codes[k])["value"] - targets[k]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for k in range(2):
            pred = field(x, codes[k])["value"]
            own = (pred - targets[k]).square().mean()
            other = (pred - targets[1 - k]).square().mean()
            assert own < 0.02, f"corner {k} did not fit its target: mse {own:.4f}"
            assert own < 0.1 * other


def test_nerf_field_blob_ranges_and_gradients() -> None:
    nerf = NeRFField(2, SMALL, hidden=32, backend="torch", seed=0)
    u = torch.tensor([0.3, 0.7])
    centre = torch.zeros(1, 3)
    far = torch.tensor([[0.0, 0.0, 1.0], [0.9, 0.0, -0.6]])
    x = torch.rand(200, 3) * 2 - 1
    sigma, albedo = nerf(x, u)
    assert sigma.shape == (200,) and albedo.shape == (200, 3)
    assert bool((sigma >= 0).all()) and bool(((albedo >= 0) & (albedo <= 1)).all())
    torch.testing.assert_close(nerf.density(x, u), sigma)
    # At initialisation the blob dominates: a dense ball at the centre, empty beyond 2 radii.
    with torch.no_grad():
        assert float(nerf.density(centre, u)) > 5.0
        assert float(nerf.density(far, u).max()) < 0.05
    (sigma.sum() + albedo.sum()).backward()
    assert nerf.field.encoding.params.grad.abs().sum() > 0
    assert nerf.field.heads["density"].first.weight.grad.abs().sum() > 0
    assert torch.isfinite(nerf.density(x, torch.rand(200, 2))).all()


def test_trunc_exp_clamps_gradient_only() -> None:
    x = torch.tensor([1.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y.detach(), torch.exp(x.detach()))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(torch.tensor([1.0, 15.0])))
    sharp = NeRFField(1, SMALL, backend="torch", density_activation="trunc_exp", seed=0)
    with torch.no_grad():
        assert float(sharp.density(torch.zeros(1, 3), torch.ones(1))) > 1e3
    with pytest.raises(ValueError):
        NeRFField(1, SMALL, density_activation="relu")
