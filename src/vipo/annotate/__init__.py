"""People label videos: the annotation web app, its store, votes and agreement, and the exports.

``vipo annotate serve DIR`` (:mod:`.server`, :mod:`.store`) lets several annotators label a folder's videos in the
browser, pairwise and pointwise; ``vipo annotate export DIR --out OUT`` (:mod:`.export`) votes their answers
(:mod:`.votes`) and writes labels for the ``human`` critic, critic training data and the Label Studio pair
(:mod:`.labelstudio`). docs/annotation.md walks a team through a round.
"""
