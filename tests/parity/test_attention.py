"""Attention in bf16 against PyTorch's fp32 scaled_dot_product_attention, outputs and gradients."""
import pytest
import torch


@pytest.mark.parametrize("keys", [7, 300])  # written out (short, bf16 on a CPU) and the fused kernel (long)
def test_attention_in_bf16_matches_the_fp32_reference_with_its_gradients(keys):
    import torch.nn.functional as F

    from omnigpt.model.attention import attend, causal_mask

    torch.manual_seed(0)
    q32, k32, v32 = (torch.randn(2, 3, keys, 16) for _ in range(3))
    mask = causal_mask(keys, 0) & (torch.rand(2, 1, 1, keys) > 0.3)
    mask[..., 0] = True  # every query sees at least one key
    for kwargs, ref_kwargs in [({"mask": None, "causal": True}, {"is_causal": True}),
                               ({"mask": mask}, {"attn_mask": mask})]:
        q, k, v = (t.bfloat16().requires_grad_() for t in (q32, k32, v32))
        out = attend(q, k, v, **kwargs)
        out.float().pow(2).sum().backward()
        rq, rk, rv = (t.clone().requires_grad_() for t in (q32, k32, v32))
        ref = F.scaled_dot_product_attention(rq, rk, rv, **ref_kwargs)
        ref.pow(2).sum().backward()
        assert out.dtype == torch.bfloat16
        assert torch.allclose(out.float(), ref, atol=0.05)
        for mine, theirs in ((q, rq), (k, rk), (v, rv)):
            assert torch.allclose(mine.grad.float(), theirs.grad, atol=0.1, rtol=0.05)
