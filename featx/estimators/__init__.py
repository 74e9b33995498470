"""The scikit-learn estimators: PretrainedFeatures, RawPixels, LinearProbe, FineTunedClassifier, CORAL."""
