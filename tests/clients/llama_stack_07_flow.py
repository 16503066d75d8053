"""Run by tests/test_openai.py with llama-stack-client 0.7.x on Python 3.12 (its own venv):
upload, vector store, attach, search, responses with file_search. Prints one JSON line."""

import json
import sys
import time

from llama_stack_client import LlamaStackClient

base_url, docs_dir, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = LlamaStackClient(base_url=base_url)
store = client.vector_stores.create(
    name="modern", extra_body={"embedding_model": "all-MiniLM-L6-v2", "embedding_dimension": 384,
                               "provider_id": "milvus"},
)
files = {}
for name in ("chat.rst", "llama3.rst", "memory_optimizations.rst", "lora_finetune.rst"):
    with open(f"{docs_dir}/{name}", "rb") as f:
        uploaded = client.files.create(file=(name, f.read(), "text/x-rst"), purpose="assistants")
    files[name] = uploaded.id
    client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id, attributes={"name": name})
statuses = {}
for name, file_id in files.items():
    for _ in range(600):
        entry = client.vector_stores.files.retrieve(vector_store_id=store.id, file_id=file_id)
        if entry.status != "in_progress":
            break
        time.sleep(0.5)
    statuses[name] = entry.status
found = client.vector_stores.search(vector_store_id=store.id, query="How does LoRA replace weight updates with trainable low-rank decomposition matrices?",
                                max_num_results=3)
response = client.responses.create(
    model=model, input="What attention mechanism does Llama3-8B use?",
    tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
)
print(json.dumps({
    "store": store.id, "statuses": statuses, "files": files,
    "top_file": found.data[0].file_id, "answer": response.output_text,
    "output_types": [item.type for item in response.output],
}))
