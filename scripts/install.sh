#!/usr/bin/env bash
# Create .venv and install the project with its test tools. torch and torchvision are named first at the
# versions this project is tested with, so pip takes them as they are rather than resolving a newer build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install --quiet -e '.[dev]'
.venv/bin/python -c "import rest, timm, submitit; print('installed: torch', __import__('torch').__version__, 'timm', timm.__version__)"
