"""Command line ``adaptertune COMMAND``; the only place that prints, reads the environment and sets exit codes.

Commands:
    train        train one run into its folder (``--resume`` continues a killed one)
    eval         re-evaluate a finished run on its test split
    predict      top-k classes for images (one run, or many adapter files on one backbone)
    list         registered backbones, datasets, methods or presets
    export       a merged ``.pt`` program or ONNX model, checked against the run's logits
    sweep        a grid of runs from a sweep spec or a preset, skipping finished points
    report       tables, plots and report.html over run folders
    bench        a preset's sweep, then its report (the main job)
    advise-rank  an adapter rank advised before any training
    drift        representation drift of the first steps, per adapter init
    toy          the paper's 2-D experiment: accuracy vs rank with its elbow
    speed        the methods' step time, memory and FLOP/s side by side
    elbow        the elbow of accuracy-vs-rank curves in a report CSV
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
