#!/usr/bin/env bash
# ms-swift (checked against ms-swift 4.6.0's argument dataclasses) SFT with the paper's recipe
# (spec section 4) on this project's ms-swift export: LoRA rank 64 / alpha 128 on the language
# model's linear layers (vision tower and aligner frozen), bf16, 3 epochs, lr 1e-4, warmup 0.1,
# per-device batch 2 x accumulation 2 (4 GPUs), max length 8192.
#
#   v2lo data export --data data/generated/train --format ms-swift --out /abs/swift_train.jsonl
#   MODEL=/models/Qwen2.5-VL-7B-Instruct DATA=/abs/swift_train.jsonl OUT=/abs/swift_sft \
#     NPROC_PER_NODE=4 bash configs/ms_swift_sft.sh
# then merge the adapter (swift export --adapters "$OUT/<run>/checkpoint-N" --merge_lora true).
set -euo pipefail
swift sft \
  --model "${MODEL:?a local Qwen2.5-VL-7B-Instruct folder}" \
  --dataset "${DATA:?the ms-swift export (.jsonl)}" \
  --output_dir "${OUT:-outputs/swift_sft}" \
  --tuner_type lora \
  --lora_rank 64 \
  --lora_alpha 128 \
  --target_modules all-linear \
  --freeze_vit true \
  --freeze_aligner true \
  --torch_dtype bfloat16 \
  --num_train_epochs 3 \
  --learning_rate 1e-4 \
  --warmup_ratio 0.1 \
  --per_device_train_batch_size 2 \
  --gradient_accumulation_steps 2 \
  --max_length 8192 \
  --split_dataset_ratio 0 \
  --save_steps 500 \
  --logging_steps 10
