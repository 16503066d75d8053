"""stackrag: a Llama Stack compatible RAG server on Milvus."""

__version__ = "0.1.0"
# The Llama Stack API release whose wire shapes we serve (clients compare against it).
LLAMA_STACK_API_VERSION = "0.2.12"
