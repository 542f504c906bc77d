"""Command line: ``adaptertune {train,eval,predict,list}``. The only place that prints."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
