"""Plain ``nn.Module`` networks, no training logic: DeepJSCC codec, GDN, SNR attention."""
