"""What every trial of a sweep shares, built from the prepared sweep: the settings that travel to
each trial beside its hyperparameters (:class:`trials.finetune.TrialSettings`, or
:class:`trials.user_function.UserFunctionSettings` for a function of your own)."""

from __future__ import annotations


def trial_settings(prepared, keep_best_model: bool):
    """What every trial of the sweep shares: the built-in fine-tuning's settings, or those of a function of your own."""
    config = prepared.config
    if config.user_function:
        from trials.user_function import UserFunctionSettings

        return UserFunctionSettings(
            function=prepared.function,
            max_epochs=config.trial.max_epochs,
            objectives=tuple(objective.metric for objective in config.objective_list),
            mode=config.objective.mode,
            patience=config.trial.early_stopping_patience,
            evals_per_epoch=config.trial.evals_per_epoch,
        )
    from trials.finetune import TrialSettings

    return TrialSettings(
        model_path=prepared.model_path,
        label_names=prepared.label_names,
        pad_token_id=prepared.pad_token_id,
        max_epochs=config.trial.max_epochs,
        objective=config.objective.metric,
        mode=config.objective.mode,
        seed=config.trial.seed,
        patience=config.trial.early_stopping_patience,
        eval_batch_size=config.trial.eval_batch_size,
        num_threads=max(1, int(config.resources.cpu)),
        use_gpu=config.resources.gpu > 0,
        checkpoint=config.trial.checkpoint,
        task=config.task,
        keep_best_model=keep_best_model,
        evals_per_epoch=config.trial.evals_per_epoch,
        quick_val_size=config.trial.quick_val_size,
        precision=config.trial.precision,
        gradient_checkpointing=config.trial.gradient_checkpointing,
        max_new_tokens=config.data.max_new_tokens,
        generation_samples=config.data.generation_samples,
    )
