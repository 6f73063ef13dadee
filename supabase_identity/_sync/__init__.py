# Generated from supabase_identity/_async/__init__.py by scripts/unasync: do not edit.
"""The clients, written once as async code; ``scripts/unasync`` generates their blocking twins."""
