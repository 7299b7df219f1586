"""`main`'s closing block: SupCon and CE side by side and the judge's line, by hand."""

from __future__ import annotations

from eibacl.workflow.main import judge_verdict, report


def test_report_puts_supcon_and_ce_side_by_side():
    results = {
        "supcon": {"test/accuracy": 0.93551, "ood/near/mahalanobis/auroc": 0.8398},
        "ce": {"test/accuracy": 0.9255, "ood/far/knn/auroc": 0.97844},
    }
    text = report({"probe": ("abc", True)}, results, "judged.")
    lines = text.splitlines()
    assert "  probe     run abc (reused)" in lines
    row = next(line for line in lines if line.strip().startswith("test accuracy"))
    assert row.split()[-2:] == ["0.936", "0.925"]
    far = next(line for line in lines if "far-OOD AUROC, kNN" in line)
    assert far.split()[-2:] == ["-", "0.978"]
    assert "Synthetic set: judged." in lines


def test_judge_verdict_from_the_generate_run_metrics():
    metrics = {
        "judge/id/kept_rate": 0.625,
        "judge/near_ood/mahalanobis/auroc": 0.931,
        "judge/near_ood/mahalanobis/band_rate": 0.454,
        "judge/real_ood_val/mahalanobis/auroc": 0.851,
    }
    line = judge_verdict(metrics)
    assert line.startswith("62% of the ID variants stay in distribution and keep their class;")
    assert "45% in the near-OOD band, AUROC 0.93" in line and "unknown classes: 0.85" in line
    assert judge_verdict({}) == "no judge figures logged."
