"""The run record of the chain runner when part of a chain is run again."""

import json

from gmvae4p import pipeline
from gmvae4p.layout import RunLayout


def test_rerunning_some_stages_keeps_the_record_of_the_others(tmp_path):
    layout = RunLayout(tmp_path / "run")
    stages = [{"stage": s, "status": "complete", "wall_s": 1.0} for s in ("01_preprocess", "02_train_gmvae")]
    stages.append({"stage": "03_pseudobulk", "status": "failed", "wall_s": 0.5})
    layout.run_record.write_text(json.dumps({"run_name": "demo", "stages": stages}))
    kept = pipeline._earlier_stages(layout, "demo", ["02_train_gmvae"])
    assert [s["stage"] for s in kept] == ["01_preprocess"]  # the rerun stage and the failed one are not kept
    assert pipeline._earlier_stages(layout, "other_run", []) == []
    record = {"stages": [{"stage": "04_classify", "status": "complete"}, *kept]}
    pipeline._write_record(layout, record)
    assert [s["stage"] for s in json.loads(layout.run_record.read_text())["stages"]] == ["01_preprocess",
                                                                                           "04_classify"]
