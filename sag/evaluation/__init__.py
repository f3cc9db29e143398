"""Evaluation: embeddings -> distances -> CMC / mAP / mINP, multi-query, CUHK03 classic, exact re-ranking."""

from sag._lazy import lazy_exports

# module -> the names it exports; imported on first use, so that sag.evaluation.protocol stays free of torch
__getattr__ = lazy_exports(
    __name__,
    {
        "cuhk03": ("average_splits", "evaluate_cuhk03_classic"),
        "distance": ("METRICS", "pairwise_distance"),
        "features": ("extract_features",),
        "multi_query": ("POOLINGS", "multi_query_features"),
        "pipeline": ("evaluate", "evaluate_features"),
        "protocol": ("AVERAGES", "PROTOCOLS", "Protocol", "get_protocol"),
        "ranking": ("AP_RULES", "RankingAccumulator", "evaluate_ranking"),
        "rerank": ("re_ranking",),
    },
)

__all__ = [
    "AP_RULES",
    "AVERAGES",
    "METRICS",
    "POOLINGS",
    "PROTOCOLS",
    "Protocol",
    "RankingAccumulator",
    "average_splits",
    "evaluate",
    "evaluate_cuhk03_classic",
    "evaluate_features",
    "evaluate_ranking",
    "extract_features",
    "get_protocol",
    "multi_query_features",
    "pairwise_distance",
    "re_ranking",
]
