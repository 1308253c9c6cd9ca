"""mosaik simulators: thin adapters over the domain code in ``agents`` and ``grid_models``.

Each can be started in anyone's own mosaik scenario, for example::

    world = mosaik.World({"Fleet": {"python": "cosim.engine.sims.building_sim:FleetSim"}})

Their META (models, attributes, units) comes from one table, ``cosim.engine.sims.meta``.
"""
