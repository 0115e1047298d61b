"""easyrec's launcher of sweeps on a Ray cluster (``hydra/launcher=ray``). Hydra instantiates launchers from the
``hydra_plugins`` namespace package only, so it lives here:
``hydra.launcher._target_: hydra_plugins.easyrec_launcher.ray_launcher.RayLauncher``."""
