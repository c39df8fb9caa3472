"""Video2Layout workbook library: one job per module, in four layers.

A module imports only from its own layer or the ones above it in this map (checked by
tests/test_project.py). The core imports nothing but the standard library; the heavier layers
import numpy, torch, transformers and friends lazily, inside the functions that need them.

    layer 0 core: errors jsonl geometry catalog layout cogmap questions scoring rewards schema prompting targets predictions harnesses benchmark baselines claims easyr1_reward
    layer 1 data: simulator renderer workers loaders dataset exporters thor
    layer 2 models: threads presets models perception generation training sft grpo merge evaluation thinkprobe ablation
    layer 3 top: runs profiles paths figures explorer report runner cli

- core: the map (text <-> boxes), geometry, the tasks with one ``solve``, the QVS-Bench scoring
  rule and the paper's reward, the row schema and error types, the prompt and the target's forms
  (metric, grid, no map, answer only), prediction files and their fingerprints, benchmark
  summaries, baselines and model-free diagnostics, the paper's claims measured with intervals;
- data: the simulator and renderer, the dataset builder (process pools that die with it),
  loaders of benchmark files, exporters to EasyR1 / ms-swift / TRL, AI2-THOR metadata;
- models: offline presets, loading checkpoints, generation, the training kit with SFT and GRPO
  on it, LoRA merges, evaluation (in memory and into resumable files), the think probe (the
  language part alone on exact maps), the ablation (variants at equal budget, resumable);
- top: the run folder and pipeline, profiles, figures and widgets, the report, the papermill
  runner and the command line.
"""

__version__ = "0.1.0"
