//! Pure render functions: state in, widgets out.
