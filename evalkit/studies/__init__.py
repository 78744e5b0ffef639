"""Studies that run the pipeline many times: the scaling sweep."""
