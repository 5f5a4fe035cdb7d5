"""One APIRouter per file; ``serving.main`` includes them all."""
