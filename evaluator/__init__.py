"""Turn one candidate graph into fitness on proxy CIFAR-10 networks."""
