"""Real-time prediction service for scikit-learn models (FastAPI on gunicorn + uvicorn)."""
