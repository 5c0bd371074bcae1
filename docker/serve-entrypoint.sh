#!/bin/sh
# Entrypoint of the r1forge serving image, for `docker run` / `podman run`. (The Helm chart sets
# the command itself: an init container runs the fetcher and the server container vLLM.)
#
# With MODEL_URI set: fetch the model to /models/$MODEL_NAME, check its sha256 ($MODEL_SHA256),
# then serve it as $MODEL_NAME with the reasoning parser on port 8000; extra arguments go to
# vLLM. Without MODEL_URI: the arguments are vLLM's OpenAI server's own (--model DIR ...).
set -eu

server() {
    exec python3 -m vllm.entrypoints.openai.api_server "$@"
}

if [ -n "${MODEL_URI:-}" ]; then
    : "${MODEL_SHA256:?MODEL_SHA256 must be set with MODEL_URI (the registry's sha256 of the model folder)}"
    : "${MODEL_NAME:?MODEL_NAME must be set with MODEL_URI (the served model name and folder under /models)}"
    python3 -m r1forge.serving.fetch --uri "$MODEL_URI" --sha256 "$MODEL_SHA256" --dest "/models/$MODEL_NAME"
    server --model "/models/$MODEL_NAME" --served-model-name "$MODEL_NAME" \
        --reasoning-parser deepseek_r1 --host 0.0.0.0 --port 8000 "$@"
fi

if [ "$#" -eq 0 ]; then
    echo "usage: set MODEL_URI, MODEL_SHA256 and MODEL_NAME (fetch and serve), or pass vLLM's" >&2
    echo "       server arguments, e.g. --model /models/NAME --reasoning-parser deepseek_r1" >&2
    exit 2
fi
server "$@"
