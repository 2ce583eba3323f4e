"""Market-data ingestion: providers, the processing pipeline, the worker and the simulator."""
