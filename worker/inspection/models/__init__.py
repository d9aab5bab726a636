"""Model adapters and profiles. Importing this package turns the Hugging Face hub offline first."""

from worker.inspection.models.offline import stay_offline

stay_offline()
