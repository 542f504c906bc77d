"""Rough GPU-hour estimates for the paper presets (the `meta` of configs/paper/*.yaml).

Assumed single-A100/H100 throughputs at 224 px, fp32/TF32 (images/s, training step incl. backward), from
timm's published benchmark orders of magnitude, capped by an 8-worker JPEG+RandomResizedCrop loader at
~3000 img/s. Adapter steps cost ~0.7x of full ones (ASSETS.md CPU table: 28-42% saved); head-only ~0.35x.
These are planning figures, not measurements.
"""

FULL = {"deit_tiny_patch16_224": 2500, "vit_small_patch16_224": 1200, "vit_base_patch16_224": 450}
COST = {"head": 0.35, "full": 1.0, "adapter": 0.7}
LOADER_CAP = 3000
TRAIN = {  # training-split images (val is held out from these)
    "cifar10": 50000, "cifar100": 50000, "svhn": 73257, "pets": 3680, "food101": 75750,
    "flowers102": 2040, "fgvc-aircraft": 6667, "tiny-imagenet": 100000, "imagenet-r": 18000,
}
TEST = {
    "cifar10": 10000, "cifar100": 10000, "svhn": 26032, "pets": 3669, "food101": 25250,
    "flowers102": 6149, "fgvc-aircraft": 3333, "tiny-imagenet": 10000, "imagenet-r": 6000,
}


def run_hours(dataset, backbone, method, epochs=50, val_fraction=0.1):
    train_tput = min(LOADER_CAP, FULL[backbone] / COST[method])
    eval_tput = min(LOADER_CAP, 3 * FULL[backbone])
    n = TRAIN[dataset]
    seconds = epochs * n * (1 - val_fraction) / train_tput + (epochs * n * val_fraction + 2 * TEST[dataset]) / eval_tput
    return seconds / 3600


def total(datasets, backbones, methods, seeds=3):
    return sum(run_hours(d, b, m) * seeds for d in datasets for b in backbones for m in methods)


if __name__ == "__main__":
    core = ["cifar10", "cifar100", "svhn", "pets", "food101"]
    ext = ["flowers102", "fgvc-aircraft", "tiny-imagenet", "imagenet-r"]
    bbs = list(FULL)
    print("core", round(total(core, bbs, ["head", "full", "adapter"]), 1))
    print("extended", round(total(ext, bbs, ["head", "full", "adapter"]), 1))
    # rank sweep: 9 ranks (1..256 needs width >= 256: ViT-S and ViT-B), adapter only
    print("rank", round(total(["cifar100", "pets"], bbs[1:], ["adapter"]) * 9, 1))
    print("placement", round(total(["cifar100", "pets"], ["vit_small_patch16_224"], ["adapter"]) * 5, 1))
    print("init", round(total(["cifar100", "pets"], ["vit_small_patch16_224"], ["adapter"]) * 3, 1))
