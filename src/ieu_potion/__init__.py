"""ieu-potion: IEU and Potion backdoor defences as a Kedro project."""

__version__ = "0.1.0"
