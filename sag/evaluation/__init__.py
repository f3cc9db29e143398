"""Evaluation: embeddings -> distances -> CMC / mAP / mINP, multi-query, CUHK03 classic, exact re-ranking."""

from sag.evaluation.cuhk03 import average_splits, evaluate_cuhk03_classic
from sag.evaluation.distance import METRICS, pairwise_distance
from sag.evaluation.features import extract_features
from sag.evaluation.multi_query import POOLINGS, multi_query_features
from sag.evaluation.pipeline import evaluate, evaluate_features
from sag.evaluation.protocol import AVERAGES, PROTOCOLS, Protocol, get_protocol
from sag.evaluation.ranking import AP_RULES, RankingAccumulator, evaluate_ranking
from sag.evaluation.rerank import re_ranking

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
