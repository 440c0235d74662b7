"""The model runtime: the registry of served models (hot reload, verification, fallback), the loaded
models and their engines, the micro-batcher, request value checks and online inputs. Below both the
prediction service (app/predict) and the stream scorer (app/stream), which import it and never each other."""
