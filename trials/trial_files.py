"""The files a trial writes in its checkpoint folder, named for whoever reads them (the driver
imports these names without loading torch)."""

STATE_FILE = "trial_state.pt"  # the training state between epochs (trials.checkpoint)
BEST_MODEL_FILE = "best_model.pt"  # the trained parameters at the trial's best epoch so far
