"""easyrec's Optuna sweeper. Hydra instantiates sweepers from the ``hydra_plugins`` namespace package only, so it
lives here: ``hydra.sweeper._target_: hydra_plugins.easyrec_sweeper.optuna_sweeper.OptunaSweeper``."""
