"""Built-in backbone entries: the paper's three, plus a tiny random-init ViT for tests."""

from .factory import BackboneInfo, register_backbone

register_backbone(
    BackboneInfo(
        "deit_tiny_patch16_224", "DeiT-Tiny/16, d=192, 12 blocks (paper)", "deit_tiny_patch16_224", paper=True
    )
)
register_backbone(
    BackboneInfo(
        "vit_small_patch16_224",
        "ViT-S/16 (AugReg IN-21k->1k), d=384, 12 blocks (paper)",
        "vit_small_patch16_224",
        paper=True,
    )
)
register_backbone(
    BackboneInfo(
        "vit_base_patch16_224",
        "ViT-B/16 (AugReg IN-21k->1k), d=768, 12 blocks (paper)",
        "vit_base_patch16_224",
        paper=True,
    )
)
register_backbone(
    BackboneInfo(
        "test_vit",
        "tiny ViT for tests: vit_tiny at 32 px, patch 4 (64 tokens), d=192, 12 blocks; random init only",
        "vit_tiny_patch16_224",
        {"img_size": 32, "patch_size": 4},
        has_weights=False,
    )
)
