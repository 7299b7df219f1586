"""The MLflow names more than one module reads or writes: run tags, artifact paths and the
metrics every training run logs. They are the project's external contract (the UI, searches,
the workflow's reuse of finished runs, `compare`): change one only knowingly.

Names that one module both writes and reads stay there (e.g. evaluation's metric names).
"""

from __future__ import annotations

# Tags of every run.
METHOD_TAG = "eibacl.method"  # supcon | ce
ENTRY_TAG = "eibacl.entry_point"  # pretrain | baseline | probe | generate | main | tune | ...
SYNTHETIC_TAG = "eibacl.synthetic"
PARAMS_TAG = "eibacl.params"  # digest of the parameters and code version (run reuse)
CODE_TAG = "eibacl.code_version"
PROCESS_TAG = "eibacl.process"  # host:pid of the process that runs (or ran) the run
SUPERSEDED_TAG = "eibacl.superseded_by"

# The data a run saw.
DATA_TAG = "eibacl.data_digest"
SPLIT_TAG = "eibacl.split"
SOURCE_TAG = "eibacl.source"  # on a code dataset source

# Encoders and their evaluation.
ENCODER_URI_TAG = "eibacl.encoder_uri"
PRETRAIN_RUN_TAG = "eibacl.pretrain_run"
PROBE_RUN_TAG = "eibacl.probe_run"
MODEL_VERSION_TAG = "eibacl.model_version"
CHAMPION_TAG = "eibacl.champion"
SELECTION_TAG = "eibacl.selection"  # on a registered model version

# Synthetic data (generate).
GENERATOR_TAG = "eibacl.generator"
GENERATOR_DIR_TAG = "eibacl.generator_dir"
SET_DIR_TAG = "eibacl.synthetic_set_dir"
SET_KEY_TAG = "eibacl.synthetic_set"
SET_REUSED_TAG = "eibacl.synthetic_reused"

# Workflow (main, compare): prefixes of one tag per step or cell.
STEP_TAG_PREFIX = "eibacl.step."
CELL_TAG_PREFIX = "eibacl.cell."

# Tune.
STUDY_TAG = "eibacl.study"
TRIAL_TAG = "eibacl.trial"
TRIAL_STATE_TAG = "eibacl.trial_state"
OBJECTIVE_TAG = "eibacl.objective"
STORAGE_TAG = "eibacl.optuna_storage"
BEST_TRIAL_TAG = "eibacl.best_trial"
BEST_PRETRAIN_RUN_TAG = "eibacl.best_pretrain_run"
BEST_PROBE_RUN_TAG = "eibacl.best_probe_run"
BEST_MODEL_URI_TAG = "eibacl.best_model_uri"

# Artifacts.
ENCODER_ARTIFACT = "encoder"
SPLIT_ARTIFACT = "split.json"
REPORT_ARTIFACT = "data_report.json"
CURVES_ARTIFACT = "plots/training_curves.png"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"

# Metrics of every training epoch that others read (curves, resume, tune's pruning, probe).
TRAIN_LOSS = "train/loss"
VAL_KNN_ACCURACY = "val/knn_accuracy"
