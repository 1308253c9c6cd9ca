"""Power-flow backends behind grid_models.powerflow.PowerFlow."""
