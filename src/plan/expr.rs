//! TEMPORARY placeholder until the condition language lands.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr;
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError { pub col: usize, pub message: String }
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference { StepStatus(String), StepExitCode(String), StepOutput { step: String, key: String }, Input(String), Env(String) }
impl Reference { pub fn step(&self) -> Option<&str> { match self { Reference::StepStatus(s) | Reference::StepExitCode(s) | Reference::StepOutput { step: s, .. } => Some(s), _ => None } } }
pub fn parse(_src: &str) -> Result<Expr, ExprError> { Ok(Expr) }
impl Expr { pub fn references(&self) -> Vec<(Reference, usize)> { vec![] } pub fn eval(&self, _c: &dyn EvalContext) -> Result<bool, ExprError> { Ok(true) } }
pub trait EvalContext {
    fn step_status(&self, step: &str) -> Option<String>;
    fn step_exit_code(&self, step: &str) -> Option<i64>;
    fn step_output(&self, step: &str, key: &str) -> Option<String>;
    fn input(&self, name: &str) -> Option<String>;
    fn env(&self, name: &str) -> Option<String>;
}
impl std::fmt::Display for ExprError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "column {}: {}", self.col, self.message) } }
