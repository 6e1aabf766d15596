//! netns test cluster
