"""Pure loss kernels: functions of arrays, no models, optimisers or configs."""
