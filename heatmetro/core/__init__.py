"""The floor every layer stands on: config, errors, geometry, sports and the stream contract.

Nothing in here imports from another heatmetro layer."""
