"""ImagePool: the image history buffer of the GAN methods."""

import io

import pytest
import torch

from nucseg.models import ImagePool


def _batches(n, batch=2, seed=0, shape=(3, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, *shape, generator=g) for _ in range(n)]


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_size_zero_passes_through_detached():
    pool = ImagePool(0, seed=0)
    x = torch.rand(3, 3, 4, 4, requires_grad=True)
    out = pool(x)
    assert torch.equal(out, x) and not out.requires_grad
    assert len(pool) == 0


def test_fills_then_mixes_history_half_the_time():
    pool = ImagePool(4, seed=0)
    batches = _batches(2)
    for batch in batches:  # not full yet: stored and returned unchanged
        assert torch.equal(pool(batch), batch)
    assert len(pool) == 4
    seen = [im for b in batches for im in b]
    from_history = fresh = 0
    for batch in _batches(200, seed=1):
        out = pool(batch)
        assert out.shape == batch.shape
        for new, returned in zip(batch, out, strict=True):
            if torch.equal(new, returned):
                fresh += 1
            else:  # an earlier input (possibly of the same batch), now swapped out
                assert any(torch.equal(returned, old) for old in seen)
                assert not any(torch.equal(returned, kept) for kept in pool.images)
                from_history += 1
            seen.append(new)
        assert len(pool) == 4
        assert all(any(torch.equal(kept, old) for old in seen) for kept in pool.images)
    assert 0.4 < from_history / (from_history + fresh) < 0.6


def test_deterministic_for_a_seed_and_independent_of_global_rng():
    outputs = []
    for seed, global_seed in ((5, 0), (5, 123), (6, 0)):
        torch.manual_seed(global_seed)
        pool = ImagePool(3, seed=seed)
        before = torch.get_rng_state()
        outputs.append(torch.cat([pool(b) for b in _batches(30)]))
        assert torch.equal(torch.get_rng_state(), before)  # the global generator is untouched
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


def test_state_round_trip_reproduces_next_outputs():
    pool = ImagePool(5, seed=7)
    batches = _batches(40, batch=3)
    for batch in batches[:20]:
        pool(batch)
    state = _round_trip(pool.state_dict())
    assert set(state) == {"size", "seed", "images", "generator"}
    assert state["images"].shape == (5, 3, 4, 4) and state["generator"].dtype == torch.uint8
    assert all(isinstance(v, int | torch.Tensor) for v in state.values())
    resumed = ImagePool(5, seed=999)  # the saved generator state overrides the seed
    resumed.load_state_dict(state)
    for batch in batches[20:]:
        assert torch.equal(resumed(batch), pool(batch))
    # an empty pool round-trips too
    empty = ImagePool(2, seed=1)
    copy = ImagePool(2, seed=1)
    copy.load_state_dict(_round_trip(empty.state_dict()))
    assert len(copy) == 0
    for batch in batches[:5]:
        assert torch.equal(copy(batch), empty(batch))


def test_rejects_bad_size_state_and_shapes():
    with pytest.raises(ValueError, match=">= 0"):
        ImagePool(-1, seed=0)
    with pytest.raises(ValueError, match="size 3, this one 2"):
        ImagePool(2, seed=0).load_state_dict(ImagePool(3, seed=0).state_dict())
    pool = ImagePool(2, seed=0)
    pool(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(3, 4, 4\)"):
        pool(torch.rand(1, 3, 8, 8))


def test_keeps_dtype_and_copies_stored_images():
    pool = ImagePool(1, seed=0)
    x = torch.rand(1, 3, 4, 4)
    pool(x)
    x.zero_()  # the caller reuses its buffer: the pool's copy must not change
    assert pool.images[0].abs().sum() > 0
    out = pool(torch.rand(8, 3, 4, 4, dtype=torch.float64))
    assert out.dtype == torch.float64
