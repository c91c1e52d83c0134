"""The Kedro side of the project's library: the dataset types the catalog names
(``adapters.datasets``) and the config loader that templated pipelines read
(``adapters.config_loader``).  Library packages below never import Kedro."""
