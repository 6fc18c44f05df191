"""The full-size networks, built on the meta device, have the official checkpoints' shapes."""

from __future__ import annotations

import torch

from server.lipsync.musetalk.unet import MUSETALK_UNET_CONFIG, build_unet
from server.lipsync.musetalk.vae import SD_VAE_FT_MSE_CONFIG, build_vae


def test_the_musetalk_unet_config_has_official_shapes() -> None:
    unet = build_unet(MUSETALK_UNET_CONFIG)
    shapes = {name: tuple(tensor.shape) for name, tensor in unet.state_dict().items()}
    assert all(tensor.is_meta for tensor in unet.state_dict().values())

    # 8 input channels (masked + reference latent), 4 out, cross-attention on 384-wide audio.
    assert shapes["conv_in.weight"] == (320, 8, 3, 3)
    assert shapes["conv_out.weight"] == (4, 320, 3, 3)
    assert shapes["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] == (320, 384)
    assert shapes["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight"] == (320, 384)
    assert shapes["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"] == (1280, 384)
    assert shapes["up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight"] == (320, 384)
    # Block widths 320 / 640 / 1280 / 1280, two resnets per down block, 1x1 conv projections.
    widths = [shapes[f"down_blocks.{i}.resnets.1.conv2.weight"][0] for i in range(4)]
    assert widths == [320, 640, 1280, 1280]
    assert shapes["down_blocks.0.attentions.0.proj_in.weight"] == (320, 320, 1, 1)
    assert shapes["time_embedding.linear_1.weight"] == (1280, 320)
    # 8 heads everywhere ("attention_head_dim": 8 is diffusers' legacy name for the count).
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.heads == 8
    assert unet.down_blocks[2].attentions[0].transformer_blocks[0].attn1.heads == 8
    # 850 M parameters: the official 1.5 / 1.0 files are 3.4 GB of fp32.
    assert sum(t.numel() for t in unet.state_dict().values()) == 849_947_844


def test_the_unet_maps_latents_and_audio_to_a_latent() -> None:
    unet = build_unet(MUSETALK_UNET_CONFIG)
    with torch.device("meta"):
        out = unet(torch.zeros(2, 8, 32, 32), torch.tensor([0]), encoder_hidden_states=torch.zeros(2, 50, 384))
    assert tuple(out.sample.shape) == (2, 4, 32, 32)


def test_sd_vae_ft_mse_config_has_official_shapes() -> None:
    vae = build_vae(SD_VAE_FT_MSE_CONFIG)
    shapes = {name: tuple(tensor.shape) for name, tensor in vae.state_dict().items()}
    assert shapes["encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert shapes["encoder.conv_out.weight"] == (8, 512, 3, 3)  # mean and log-variance
    assert shapes["quant_conv.weight"] == (8, 8, 1, 1)
    assert shapes["post_quant_conv.weight"] == (4, 4, 1, 1)
    assert shapes["decoder.conv_out.weight"] == (3, 128, 3, 3)
    assert shapes["decoder.mid_block.attentions.0.to_q.weight"] == (512, 512)
    assert vae.config.scaling_factor == 0.18215
