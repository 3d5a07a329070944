const project: string = "api";
console.log(project);
