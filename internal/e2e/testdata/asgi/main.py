"""A FastAPI app as the seeds write them, served by tandem with runtime.asgi."""
import os

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
started = {"lifespan": False}


@app.on_event("startup")
def startup():
    started["lifespan"] = True


class Features(BaseModel):
    features: list[float]


@app.get("/health")
def health():
    return {"status": "ok", "lifespan": started["lifespan"]}


@app.post("/predict")
def predict(f: Features):
    return {"sum": sum(f.features), "pid": os.getpid()}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=8000)
