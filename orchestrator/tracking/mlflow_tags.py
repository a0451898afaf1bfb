"""The tags hpo sets on MLflow runs, experiments and model versions. Each name starts with
:data:`TAG_PREFIX` (``hpo.study``, ``hpo.exit_status``, ...), so a search in MLflow finds them by
name; the names are the contract with whoever reads the runs."""

TAG_PREFIX = "hpo."

# On every run hpo starts (a sweep's parent run, a trial's run)
STUDY = TAG_PREFIX + "study"  # also on the experiment and on a registered model version
ROLE = TAG_PREFIX + "role"  # one of the three roles below
SWEEP_ROLE = "sweep"  # an invocation's parent run
SEARCH_ROLE = "search"  # a search trial's run
CONFIRM_ROLE = "confirm"  # a confirmation run's

# On a sweep's parent run
INVOCATION_ID = TAG_PREFIX + "invocation_id"
HOST = TAG_PREFIX + "host"
USER = TAG_PREFIX + "user"
SAMPLER = TAG_PREFIX + "sampler"
SCHEDULER = TAG_PREFIX + "scheduler"
OBJECTIVE = TAG_PREFIX + "objective"
CODE_VERSION = TAG_PREFIX + "code_version"
EXIT_STATUS = TAG_PREFIX + "exit_status"
NEW_BEST = TAG_PREFIX + "new_best"
TRIALS_PREFIX = TAG_PREFIX + "trials."  # + a trial state in lower case: how many trials of this invocation ended so
CHOSEN_TRIAL = TAG_PREFIX + "chosen_trial"
ANSWER = TAG_PREFIX + "answer"
REGISTERED_MODEL = TAG_PREFIX + "registered_model"
REGISTERED_MODEL_URI = TAG_PREFIX + "registered_model_uri"

# On a trial's run
OPTUNA_TRIAL_NUMBER = TAG_PREFIX + "optuna_trial_number"  # also on a registered model version
RAY_TRIAL_ID = TAG_PREFIX + "ray_trial_id"
STATE = TAG_PREFIX + "state"
STATE_REASON = TAG_PREFIX + "state_reason"
CONFIRMS = TAG_PREFIX + "confirms"
TRAINING_SEED = TAG_PREFIX + "training_seed"
NODE = TAG_PREFIX + "node"
FROZEN_CACHE = TAG_PREFIX + "frozen_cache"
RESTARTS = TAG_PREFIX + "restarts"
LAST_RESTART_REASON = TAG_PREFIX + "last_restart_reason"
MICRO_BATCH_SIZE = TAG_PREFIX + "micro_batch_size"

# On a registered model version (with TAG_PREFIX + each test metric's name)
SEARCH_TRIAL = TAG_PREFIX + "search_trial"
SOURCE_RUN_ID = TAG_PREFIX + "source_run_id"
PARENT_RUN_ID = TAG_PREFIX + "parent_run_id"
SEARCH_SCORE = TAG_PREFIX + "search_score"
CONFIRMATION_TRIAL = TAG_PREFIX + "confirmation_trial"
CONFIRMED_MEAN = TAG_PREFIX + "confirmed_mean"
VALUE = TAG_PREFIX + "value"
INFERENCE = TAG_PREFIX + "inference"
