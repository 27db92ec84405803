"""The spiking side: the converted network, the simulation engine, input encodings."""
