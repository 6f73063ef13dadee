"""The clients, written once as async code; ``scripts/unasync`` generates their blocking twins."""
