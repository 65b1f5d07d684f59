"""williamson: the reference virus throttle, whose code, model, rules and doc stay in `throttle/`
(docs/throttle.md); this folder is its registry entry (`descriptor.py`) and a model adapter (`model.py`)."""
