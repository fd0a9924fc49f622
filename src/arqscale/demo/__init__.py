"""Demo workloads modelled on real ones: email, data exports, image processing, verification."""
