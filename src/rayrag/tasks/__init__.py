"""The built-in tasks: each makes its documents and QA splits in the formats `rayrag index` and `rayrag train`
read.

`synthetic` (invented entities and their facts) is the task of `demo`, the embedded end-to-end job behind `rayrag
demo`; `realtext` (Wikipedia lead paragraphs from a PyPI package) is the real-text task that `scripts/realtext.py`
trains and scores. Their measured training settings are the recipes `configs/demo.yaml` and `configs/realtext.yaml`.
"""
