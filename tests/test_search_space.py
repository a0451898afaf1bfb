import optuna.distributions as od
import pytest
from pydantic import ValidationError

from orchestrator.search.search_space import SearchSpace, presets


def test_converts_each_kind_to_optuna_distributions():
    space = SearchSpace.model_validate({
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
        "unfreeze_depth": {"type": "int", "low": 0, "high": 6, "step": 2},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        "weight_decay": 0.01,
    })
    assert space.distributions() == {
        "learning_rate": od.FloatDistribution(1e-5, 1e-3, log=True),
        "dropout": od.FloatDistribution(0.0, 0.3, step=0.1),
        "unfreeze_depth": od.IntDistribution(0, 6, step=2),
        "batch_size": od.CategoricalDistribution([16, 32, 64]),
    }
    assert space.fixed == {"weight_decay": 0.01}
    assert space.bounds("unfreeze_depth") == (0, 6)
    assert space.bounds("batch_size") == (16, 64)
    assert space.bounds("weight_decay") == (0.01, 0.01)
    assert space.bounds("label_smoothing") is None


@pytest.mark.parametrize("spec, message", [
    ({"dropout": {"type": "float", "low": 0.3, "high": 0.1}}, "low must not exceed high"),
    ({"learning_rate": {"type": "float", "low": -1.0, "high": 1.0, "log": True}}, "log scale needs low > 0"),
    ({"learning_rate": {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}}, "cannot be combined"),
    ({"unfreeze_depth": {"type": "int", "low": 0, "high": 6, "step": 0}}, "step must be"),
    ({"batch_size": {"type": "categorical", "choices": [16, 16]}}, "distinct"),
    ({"dropout": {"type": "float", "low": 0, "high": 1, "scale": "log"}}, "Extra inputs"),
    ({"weight_decay": 0.1}, "searches nothing"),
])
def test_rejects_invalid_parameters(spec, message):
    with pytest.raises(ValidationError, match=message):
        SearchSpace.model_validate(spec)


def test_presets_load_and_cover_the_tuned_hyperparameters():
    assert "text_classification" in presets()
    from orchestrator.search.search_space import PRESET_DIR, read_yaml_mapping

    space = SearchSpace.model_validate(read_yaml_mapping(PRESET_DIR / "text_classification.yaml"))
    assert {"learning_rate", "batch_size", "unfreeze_depth", "weight_decay", "dropout", "warmup_ratio", "label_smoothing"} <= set(space.params)
    assert space.params["learning_rate"].log


def test_cpu_and_gpu_presets_load():
    from orchestrator.search.search_space import PRESET_DIR, read_yaml_mapping

    assert {"text_classification_cpu", "text_classification_gpu"} <= set(presets())
    cpu = SearchSpace.model_validate(read_yaml_mapping(PRESET_DIR / "text_classification_cpu.yaml"))
    gpu = SearchSpace.model_validate(read_yaml_mapping(PRESET_DIR / "text_classification_gpu.yaml"))
    assert len(cpu.params) < len(gpu.params)
    assert {"layer_lr_decay", "unfreeze_every", "class_balance", "augment_prob"} <= set(gpu.params)


CONDITIONAL = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "unfreeze_depth": {"type": "int", "low": 0, "high": 3},
    "layer_lr_decay": {"type": "float", "low": 0.6, "high": 1.0, "when": {"unfreeze_depth": {"min": 1}}},
    "unfreeze_every": {"type": "categorical", "choices": [0, 1], "when": {"unfreeze_depth": {"min": 2}}},
    "class_balance": {"type": "categorical", "choices": ["none", "oversample"]},
    "augment_prob": {"type": "float", "low": 0.0, "high": 0.2, "when": {"class_balance": ["oversample"]}},
}


def test_conditional_parameters_are_searched_only_when_their_condition_holds():
    import optuna

    space = SearchSpace.model_validate(CONDITIONAL)
    assert space.conditional and space.order().index("unfreeze_depth") < space.order().index("layer_lr_decay")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(40):
        trial = study.ask()
        values = space.sample(trial)
        study.tell(trial, 0.0)
        assert ("layer_lr_decay" in values) == (values["unfreeze_depth"] >= 1)
        assert ("unfreeze_every" in values) == (values["unfreeze_depth"] >= 2)
        assert ("augment_prob" in values) == (values["class_balance"] == "oversample")
        seen.append(values)
    assert any("layer_lr_decay" in v for v in seen) and any("layer_lr_decay" not in v for v in seen)


@pytest.mark.parametrize("change, message", [
    ({"layer_lr_decay": {"type": "float", "low": 0.6, "high": 1.0, "when": {"depth": {"min": 1}}}}, "names 'depth', which the search space does not define"),
    ({"unfreeze_depth": {"type": "int", "low": 0, "high": 3, "when": {"unfreeze_depth": [1]}}}, "names unfreeze_depth itself"),
    ({"unfreeze_depth": {"type": "int", "low": 0, "high": 3, "when": {"layer_lr_decay": {"min": 0.7}}}}, "depend on each other in a circle"),
    ({"augment_prob": {"type": "float", "low": 0.0, "high": 0.2, "when": {"class_balance": {"above": 1}}}}, "Extra inputs are not permitted|valid list"),
])
def test_bad_conditions_are_refused(change, message):
    with pytest.raises(ValidationError, match=message):
        SearchSpace.model_validate({**CONDITIONAL, **change})


def test_tpe_searches_a_conditional_space_through_the_searcher(tmp_path):
    from orchestrator.search.searcher import StudySearcher
    from orchestrator.storage.study import open_storage, open_study
    from orchestrator.sweep.config import parse_sweep

    config = parse_sweep({"name": "cond", "model": "m", "data": {"source": "d.csv"}, "search_space": CONDITIONAL,
                          "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 3},
                          "storage": {"study_db": f"sqlite:///{tmp_path / 'c.db'}"}}, tmp_path)
    study = open_study(config, open_storage(config.storage.study_db))
    assert study.sampler._group
    searcher = StudySearcher(study, config.search_space, "val_f1_macro", "max")
    for i in range(10):
        values = searcher.suggest(f"t{i}")
        assert ("layer_lr_decay" in values) == (values["unfreeze_depth"] >= 1)
        study.tell(searcher.open_trials.pop(f"t{i}"), values["learning_rate"])
