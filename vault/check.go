package vault

// CheckSealConfig validates cfg as NewSeal would, without touching the network or a device,
// so a configuration can be checked when it is read.
func CheckSealConfig(cfg SealConfig) error {
	_, err := planSeal(cfg)
	return err
}
